# What the guestbook's pods may read: their database login, their config, their TLS
# certificate; and the lease calls latch-init makes to renew and, at shutdown, revoke.
path "database/creds/app" {
  capabilities = ["read"]
}

path "secret/data/guestbook/*" {
  capabilities = ["read"]
}

path "pki/issue/guestbook" {
  capabilities = ["create", "update"]
}

path "sys/leases/renew" {
  capabilities = ["update"]
}

path "sys/leases/revoke" {
  capabilities = ["update"]
}
