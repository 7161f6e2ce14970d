-- Reverses 0004_jobs.
DROP TABLE IF EXISTS jobs;
