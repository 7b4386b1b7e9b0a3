"""racedit package."""
