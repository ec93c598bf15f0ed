"""The training recipe both twins' loops follow (recipe), what they share around the loop (run), and what a run leaves for people (logs)."""
