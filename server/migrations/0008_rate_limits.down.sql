-- Reverses 0008_rate_limits.
DROP TABLE IF EXISTS rate_limit_buckets;
