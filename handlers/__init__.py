"""The API edge: one module per resource. Parse what Connexion hands over, call the core, return."""
