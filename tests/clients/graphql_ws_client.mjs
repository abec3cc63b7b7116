// The stock graphql-ws client (as GraphiQL and Apollo's GraphQLWsLink use it):
// a mutation, a live subscription to the run it started, then resumes.
import { createClient } from "graphql-ws";
import WebSocket from "ws";

import { EVENTS, EXECUTE, auth, config, fail, finish, resumePoints } from "./common.mjs";

const client = createClient({
  url: config.wsUrl,
  webSocketImpl: WebSocket,
  connectionParams: auth,
  lazy: false,
  retryAttempts: 0,
});

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
  await client.dispose();
  finish({ id, live, full, resumed });
} catch (error) {
  fail(error);
}
