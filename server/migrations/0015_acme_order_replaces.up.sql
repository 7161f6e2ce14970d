-- ARI (RFC 9773 §5): an order may name the certificate it replaces. The certID is stored so the
-- order object can echo it, and a partial unique index makes "one live replacement per
-- certificate" hold across replicas: a second order replacing the same certificate while the
-- first is not `invalid` violates it (answered as 409 `alreadyReplaced`).
ALTER TABLE acme_orders ADD COLUMN IF NOT EXISTS replaces TEXT;
CREATE UNIQUE INDEX IF NOT EXISTS acme_orders_replaces_key ON acme_orders (replaces)
    WHERE replaces IS NOT NULL AND status <> 'invalid';
