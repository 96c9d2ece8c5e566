"""The guard as served: one engine setup for the API and the playground (engines),
storing guarded turns (turns), what the policy serves and the probe cascade
(policy, services, cascade_run), settings pages, /metrics and the task."""
