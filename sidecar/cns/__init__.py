"""Forwarding to the CNS: transport adapter, durable outbox, delivery worker, simulator."""
