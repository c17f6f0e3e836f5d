"""Federated rounds: planning, round 0, the client job, the server job and the strategies."""
