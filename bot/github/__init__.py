"""GitHub access: App auth, the retrying REST client, API helpers, permissions, repo config."""
