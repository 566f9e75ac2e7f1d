package subscription_test

func runCrashChild() bool { return false }
