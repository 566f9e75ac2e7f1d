package postgres_test

func runChild() bool { return false }
