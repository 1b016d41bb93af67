"""autodl-design: reinforcement-learning design of CNN cells under hardware constraints."""
