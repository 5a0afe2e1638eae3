module github.com/calmline/calmline/cmd

go 1.26.0
