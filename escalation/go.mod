module github.com/calmline/calmline/escalation

go 1.26.0
