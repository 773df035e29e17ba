-- +goose Up
-- Registration (modules/agents): both addresses of an agent, and what a
-- registration refused by the registration policy leaves behind.
--
-- agents.ip_address stays what the agent reports for itself
-- (RegistrationRequest.ip_address); peer_address is the IP address the master
-- saw the agent's gRPC connection come from, which the registration ACL's
-- address patterns are checked against.
ALTER TABLE agents ADD COLUMN peer_address text NOT NULL DEFAULT '';
-- Why the registration policy refused the agent's last registration attempt
-- (its token was burned); cleared by a successful registration.
ALTER TABLE agents ADD COLUMN registration_error text NOT NULL DEFAULT '';
-- A token whose registration the policy denied is revoked and says why, so it
-- cannot be retried with another claimed hostname.
ALTER TABLE agent_tokens ADD COLUMN refusal text NOT NULL DEFAULT '';

-- The registration ACL's patterns are hostname globs, IP addresses or CIDRs
-- (the peer address) and key=glob (the token's labels); see
-- agents.RegistrationPolicy.
COMMENT ON TABLE registration_acls IS 'patterns: hostname globs, IP addresses/CIDRs matched against the peer address, key=glob matched against the token''s labels';

-- +goose Down
COMMENT ON TABLE registration_acls IS NULL;
ALTER TABLE agent_tokens DROP COLUMN refusal;
ALTER TABLE agents DROP COLUMN registration_error;
ALTER TABLE agents DROP COLUMN peer_address;
