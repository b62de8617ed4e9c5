"""Integrations with agent frameworks. Each lives in its own module with its own optional extra
(``pip install ckdb[langgraph]``) and keeps its data in its own sub-databases."""
