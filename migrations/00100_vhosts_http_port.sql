-- +goose Up
-- A TLS virtual host may also serve a plain-HTTP port (http_port, 0 = none):
-- its own server answers there too, or only its HTTP-to-HTTPS redirect when
-- redirect_https is set. A redirect without http_port keeps listening on
-- port 80, as before the column existed.
ALTER TABLE virtual_hosts ADD COLUMN http_port integer NOT NULL DEFAULT 0
    CHECK (http_port BETWEEN 0 AND 65535);
ALTER TABLE virtual_hosts ADD CONSTRAINT virtual_hosts_http_port_tls
    CHECK (http_port = 0 OR (ssl_enabled AND http_port <> listen_port));

-- +goose Down
ALTER TABLE virtual_hosts DROP COLUMN http_port;
