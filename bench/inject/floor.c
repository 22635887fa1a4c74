/* The floor bench/inject measures latch-inject against: a bare libyaml event round trip of the
 * same stream, parsed and emitted event by event, with no tree and no change. Any YAML
 * mutator that reads and writes the stream pays at least this.
 *
 *   yaml-roundtrip [IN.yaml] > OUT.yaml
 */
#include <stdio.h>
#include <yaml.h>

int main(int argc, char **argv)
{
	FILE *in = argc > 1 ? fopen(argv[1], "rb") : stdin;
	if (!in)
		return perror(argv[1]), 1;
	yaml_parser_t parser;
	yaml_emitter_t emitter;
	yaml_event_t event;
	yaml_parser_initialize(&parser);
	yaml_emitter_initialize(&emitter);
	yaml_parser_set_input_file(&parser, in);
	yaml_emitter_set_output_file(&emitter, stdout);
	yaml_emitter_set_unicode(&emitter, 1);
	for (;;) {
		if (!yaml_parser_parse(&parser, &event)) {
			fprintf(stderr, "yaml-roundtrip: %zu:%zu: %s\n", parser.problem_mark.line + 1,
				parser.problem_mark.column + 1, parser.problem ? parser.problem : "parse error");
			return 1;
		}
		int done = event.type == YAML_STREAM_END_EVENT;
		if (!yaml_emitter_emit(&emitter, &event)) { /* the emitter frees the event */
			fprintf(stderr, "yaml-roundtrip: %s\n", emitter.problem ? emitter.problem : "emit error");
			return 1;
		}
		if (done)
			break;
	}
	yaml_parser_delete(&parser);
	yaml_emitter_delete(&emitter);
	return 0;
}
