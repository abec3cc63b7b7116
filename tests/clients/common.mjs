// Shared by the client scripts: the config the test passes, a guard against
// hanging, and the operations every client runs.
export const config = JSON.parse(process.argv[2]);

// A stuck client must fail the test, not hang it.
const guard = setTimeout(() => {
  console.error(`client timed out after ${config.timeoutMs} ms`);
  process.exit(3);
}, config.timeoutMs ?? 60000);

export function finish(result) {
  clearTimeout(guard);
  process.stdout.write(JSON.stringify(result) + "\n");
  process.exit(0);
}

export function fail(error) {
  console.error(error?.stack ?? String(error));
  process.exit(1);
}

export const auth = { Authorization: `Bearer ${config.token}` };

export const EVENTS = `subscription Watch($id: ID!, $after: Int) {
  executionEvents(executionId: $id, afterSeq: $after) {
    __typename
    ... on ExecutionStatusEvent { seq execution { id status outputs } }
    ... on NodeExecutionEvent { seq executionId nodeExecution { id nodeId status } }
  }
}`;

export const EXECUTE = `mutation Run($graph: ID!, $inputs: JSON!) {
  executeGraph(graphId: $graph, inputs: $inputs) { id status }
}`;

// Every warning or error the libraries print (Apollo's "Cache data may be lost…").
export const warnings = [];
for (const level of ["warn", "error"]) {
  const original = console[level];
  console[level] = (...args) => {
    warnings.push(args.map(String).join(" "));
    original(...args);
  };
}

// The seqs to resume after, once the full record is known: the start, the
// middle, the last but one and the very last event.
export function resumePoints(full) {
  const last = full[full.length - 1].seq;
  return [...new Set([0, 1, Math.floor(last / 2), last - 1, last])];
}
