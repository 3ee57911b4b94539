"""Events for outside systems: the transactional outbox and webhook delivery."""
