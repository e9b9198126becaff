"""Rolling a change out over a fleet: canaries first, then batches, each verified before the next
(plan.py: the order; run.py: the orchestrator; pyinfra_ops.py: the real apply and rollback)."""
