module github.com/calmline/calmline/proto

go 1.26.0
