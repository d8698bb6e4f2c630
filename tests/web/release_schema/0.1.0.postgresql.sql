-- The DDL deskpilot 0.1.0 executed on postgresql (Base.metadata.create_all at main c0d5525, captured from
-- a real run), before it had migrations. Frozen: tests/web/test_migrations.py builds "a database of the
-- current release" from it. Never edit.

CREATE TABLE tokens (
	id VARCHAR(36) NOT NULL, 
	name VARCHAR(200) NOT NULL, 
	hash VARCHAR(64) NOT NULL, 
	created_at TIMESTAMP WITH TIME ZONE NOT NULL, 
	revoked_at TIMESTAMP WITH TIME ZONE, 
	PRIMARY KEY (id), 
	UNIQUE (hash)
);

CREATE INDEX ix_tokens_name ON tokens (name);

CREATE TABLE sessions (
	id VARCHAR(36) NOT NULL, 
	owner VARCHAR(200) NOT NULL, 
	task VARCHAR NOT NULL, 
	model VARCHAR(200) NOT NULL, 
	policy JSON NOT NULL, 
	max_steps INTEGER NOT NULL, 
	max_cost_usd FLOAT, 
	width INTEGER NOT NULL, 
	height INTEGER NOT NULL, 
	status VARCHAR(32) NOT NULL, 
	control VARCHAR(16) NOT NULL, 
	result VARCHAR, 
	error VARCHAR, 
	last_seq INTEGER NOT NULL, 
	input_tokens INTEGER NOT NULL, 
	output_tokens INTEGER NOT NULL, 
	cost_usd FLOAT NOT NULL, 
	usage_totals JSON NOT NULL, 
	inbox JSON NOT NULL, 
	taken_over_at TIMESTAMP WITH TIME ZONE, 
	created_at TIMESTAMP WITH TIME ZONE NOT NULL, 
	updated_at TIMESTAMP WITH TIME ZONE NOT NULL, 
	PRIMARY KEY (id)
);

CREATE INDEX ix_sessions_owner ON sessions (owner);

CREATE INDEX ix_sessions_status ON sessions (status);

CREATE TABLE events (
	id SERIAL NOT NULL, 
	session_id VARCHAR(36) NOT NULL, 
	seq INTEGER NOT NULL, 
	type VARCHAR(32) NOT NULL, 
	data JSON NOT NULL, 
	image_ref VARCHAR(80), 
	created_at TIMESTAMP WITH TIME ZONE NOT NULL, 
	PRIMARY KEY (id), 
	UNIQUE (session_id, seq), 
	FOREIGN KEY(session_id) REFERENCES sessions (id)
);

CREATE INDEX ix_events_image_ref ON events (image_ref);

CREATE INDEX ix_events_session_id ON events (session_id);

CREATE TABLE approvals (
	id VARCHAR(64) NOT NULL, 
	session_id VARCHAR(36) NOT NULL, 
	status VARCHAR(16) NOT NULL, 
	tool_use_id VARCHAR(128) NOT NULL, 
	tool VARCHAR(64) NOT NULL, 
	input JSON NOT NULL, 
	reason VARCHAR NOT NULL, 
	image_ref VARCHAR(80), 
	note VARCHAR, 
	edited_input JSON, 
	created_at TIMESTAMP WITH TIME ZONE NOT NULL, 
	decided_at TIMESTAMP WITH TIME ZONE, 
	PRIMARY KEY (id, session_id), 
	FOREIGN KEY(session_id) REFERENCES sessions (id)
);

CREATE TABLE usage (
	id SERIAL NOT NULL, 
	session_id VARCHAR(36) NOT NULL, 
	input_tokens INTEGER NOT NULL, 
	output_tokens INTEGER NOT NULL, 
	cache_read_tokens INTEGER NOT NULL, 
	cache_creation_tokens INTEGER NOT NULL, 
	cost_usd FLOAT NOT NULL, 
	created_at TIMESTAMP WITH TIME ZONE NOT NULL, 
	PRIMARY KEY (id), 
	FOREIGN KEY(session_id) REFERENCES sessions (id)
);

CREATE INDEX ix_usage_session_id ON usage (session_id);
