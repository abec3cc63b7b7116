"""GraphQL shapes: types, inputs, permissions, and the extensions and rules
that run around every resolver. The root types are composed in
resolvers/root.py, which imports these (never the other way)."""
