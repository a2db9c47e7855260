"""The traffic simulator: seeded mixes of people, integrations, agents and attackers through the real pipeline."""
