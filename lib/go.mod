module github.com/calmline/calmline/lib

go 1.26.0
