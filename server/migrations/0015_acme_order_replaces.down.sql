DROP INDEX IF EXISTS acme_orders_replaces_key;
ALTER TABLE acme_orders DROP COLUMN IF EXISTS replaces;
