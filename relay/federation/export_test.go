package federation

// SetLoseAnswer lets tests lose the answers of committed deliveries
// (nil: none).
func SetLoseAnswer(f func() bool) { loseAnswer = f }
