/* Response envelopes as Vault 1.21 returns them (values replaced), for the tests that turn
 * Vault responses into files. */
#pragma once

static const char db_creds[] =
	"{\"request_id\":\"a1\",\"lease_id\":\"database/creds/app/Xy12\",\"renewable\":true,\"lease_duration\":3600,"
	"\"data\":{\"password\":\"A1a-pw\",\"username\":\"v-kubernet-app-abc-1764133000\"},\"wrap_info\":null,"
	"\"warnings\":null,\"auth\":null}";
static const char kv2[] =
	"{\"request_id\":\"b2\",\"lease_id\":\"\",\"renewable\":false,\"lease_duration\":0,\"data\":{\"data\":"
	"{\"password\":\"s3<&>\",\"username\":\"demo\"},\"metadata\":{\"created_time\":\"2026-11-26T05:00:00.1Z\","
	"\"custom_metadata\":null,\"deletion_time\":\"\",\"destroyed\":false,\"version\":1}},\"wrap_info\":null,"
	"\"warnings\":null,\"auth\":null}";
