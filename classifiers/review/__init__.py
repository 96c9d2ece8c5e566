"""Review: flagged turns become queue items that reviewers claim and decide
(services), decisions become training feedback (feedback), the dashboard's numbers
and live counters (dashboard, consumers), pages."""
