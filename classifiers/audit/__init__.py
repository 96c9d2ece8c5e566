"""Label audits of a dataset: out-of-fold heads queue the labels they doubt (run),
people decide them and the queue learns an order (services), the page's numbers
(report), pages and the task."""
