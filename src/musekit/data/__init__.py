"""Datasets: the procedural shapes world and pre-encoded token shards."""
