-- Shared sliding-window rate limiter state (contract §8): one row per key, the timestamps of
-- the admitted calls inside the window. Rows are locked with SELECT ... FOR UPDATE so every
-- replica draws on one budget; the janitor deletes rows idle past the longest window.
CREATE TABLE rate_limit_buckets (
    bucket_key TEXT PRIMARY KEY,
    timestamps TIMESTAMPTZ[] NOT NULL DEFAULT '{}',
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX idx_rate_limit_buckets_updated_at ON rate_limit_buckets (updated_at);
