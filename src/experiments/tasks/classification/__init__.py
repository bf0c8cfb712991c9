"""Sentence classification tasks: financial sentiment, support intents, the user's own labelled text."""
