"""Named-entity recognition task."""
