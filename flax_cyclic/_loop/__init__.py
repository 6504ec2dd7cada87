"""The Trainer's loop, one concern per module (private)."""
