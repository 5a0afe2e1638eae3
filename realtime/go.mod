module github.com/calmline/calmline/realtime

go 1.26.0
