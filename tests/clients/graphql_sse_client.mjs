// The graphql-sse client in its "distinct connections" mode: one HTTP stream
// (text/event-stream) per operation.
import { createClient } from "graphql-sse";

import { EVENTS, EXECUTE, auth, config, fail, finish, resumePoints } from "./common.mjs";

const client = createClient({ url: config.httpUrl, headers: auth, retryAttempts: 0 });

function collect(query, variables) {
  return new Promise((resolve, reject) => {
    const results = [];
    client.subscribe(
      { query, variables },
      {
        next: (result) => {
          if (result.errors) reject(new Error(JSON.stringify(result.errors)));
          else results.push(result.data);
        },
        error: (error) => reject(error instanceof Error ? error : new Error(JSON.stringify(error))),
        complete: () => resolve(results),
      },
    );
  });
}

try {
  const [started] = await collect(EXECUTE, { graph: config.graphId, inputs: {} });
  const id = started.executeGraph.id;
  const live = (await collect(EVENTS, { id })).map((d) => d.executionEvents);
  const full = (await collect(EVENTS, { id, after: 0 })).map((d) => d.executionEvents);
  const resumed = {};
  for (const after of resumePoints(full)) {
    resumed[after] = (await collect(EVENTS, { id, after })).map((d) => d.executionEvents);
  }
  client.dispose();
  finish({ id, live, full, resumed });
} catch (error) {
  fail(error);
}
