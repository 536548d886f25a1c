"""The demo platform: a seeded account and a small employees API that tallykey protects."""
