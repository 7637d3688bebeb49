"""The `clouddigit` command: scripts the console through its REST API only (no Django imports here)."""
