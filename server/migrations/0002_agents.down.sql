-- Reverses 0002_agents.
DROP TABLE IF EXISTS agents;
