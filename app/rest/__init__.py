"""Plain HTTP routes beside /graphql: the Stripe webhook and file uploads."""
