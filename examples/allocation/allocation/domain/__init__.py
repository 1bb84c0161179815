"""The domain: products, their batches and order lines, with the messages about them."""
