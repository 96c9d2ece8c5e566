"""The classifiers app: data, training, the guard and review, one package per domain.

Domains, in dependency order (each imports only from those before it):

    ml/          plain Python + torch, never Django: the models, data, serving, eval
    models/      the database tables of every domain (one app label: classifiers)
    core/        jobs (runner, progress to the browser), shared model caches, pages
    datasets/    start a generation run, run it, generators, examples, lineage, combine
    audit/       label audits of a dataset
    training/    training runs, and the model registry (activate, roll back, classify)
    review/      flagged turns, triage, feedback into datasets, the dashboard
    guard/       guard policy, engines (one setup for API and playground), cascade
    api/         /api/v1/classify, OpenAI-compatible /v1/..., tokens, OpenAPI
    playground/  the live chat with per-token scores
    urls.py routing.py tasks.py   the explicit lists of pages, sockets and tasks

Inside a domain, services.py starts work and enqueues its task; tasks.py calls
run.py; run never imports services. tests/test_architecture.py checks the order.
"""
