// Apollo Client 4 with the cache set up as the README documents. Mode "ws":
// subscriptions over GraphQLWsLink, the rest over HttpLink. Mode "http":
// HttpLink alone, so subscriptions use Apollo's multipart protocol.
import { ApolloClient, ApolloLink, HttpLink, gql } from "@apollo/client";
import { GraphQLWsLink } from "@apollo/client/link/subscriptions";
import { OperationTypeNode } from "graphql";
import { createClient } from "graphql-ws";
import WebSocket from "ws";

import { EVENTS, EXECUTE, auth, config, fail, finish, resumePoints, warnings } from "./common.mjs";

const { agentgraphCache } = await import(config.cacheModule);

const httpLink = new HttpLink({ uri: config.httpUrl, headers: auth });
let link = httpLink;
let wsClient = null;
if (config.mode === "ws") {
  wsClient = createClient({
    url: config.wsUrl,
    webSocketImpl: WebSocket,
    connectionParams: auth,
    retryAttempts: 0,
  });
  link = ApolloLink.split(
    ({ operationType }) => operationType === OperationTypeNode.SUBSCRIPTION,
    new GraphQLWsLink(wsClient),
    httpLink,
  );
}
const client = new ApolloClient({ link, cache: agentgraphCache() });

const GRAPH = gql`
  fragment GraphParts on Graph { id version name isActive nodes { id blockId } }
`;
const CREATE = gql`
  mutation Create($g: GraphInput!) { createGraph(graph: $g) { ...GraphParts } }
  ${GRAPH}
`;
const UPDATE = gql`
  mutation Update($id: ID!, $g: GraphInput!) { updateGraph(id: $id, graph: $g) { ...GraphParts } }
  ${GRAPH}
`;
const VERSIONS = gql`
  query Versions($id: ID!) { graphVersions(id: $id) { ...GraphParts } }
  ${GRAPH}
`;
const ME = gql`
  query Me { me { id email notificationPreferences { id dailyLimit settings { type enabled } } } }
`;
const PREFERENCES = gql`
  mutation Prefs($limit: Int!) {
    updateNotificationPreferences(input: { dailyLimit: $limit }) { id dailyLimit }
  }
`;
const STATUS = gql`
  fragment Status on Execution { id status outputs }
`;

function collect(query, variables) {
  return new Promise((resolve, reject) => {
    const events = [];
    client.subscribe({ query: gql(query), variables }).subscribe({
      next: (result) => {
        if (result.error) reject(result.error);
        else events.push(result.data.executionEvents);
      },
      error: reject,
      complete: () => resolve(events),
    });
  });
}

try {
  // Two versions of one graph stay two objects in the cache.
  const created = await client.mutate({ mutation: CREATE, variables: { g: config.graphInput } });
  const graphId = created.data.createGraph.id;
  await client.mutate({
    mutation: UPDATE,
    variables: { id: graphId, g: { ...config.graphInput, name: "renamed" } },
  });
  const versions = await client.query({ query: VERSIONS, variables: { id: graphId } });

  // A mutation's answer updates what `me` shows, with no refetch.
  const before = await client.query({ query: ME });
  const limit = before.data.me.notificationPreferences.dailyLimit + 7;
  await client.mutate({ mutation: PREFERENCES, variables: { limit } });
  const after = client.readQuery({ query: ME });

  // A run watched live, then resumed after several seqs.
  const started = await client.mutate({
    mutation: gql(EXECUTE),
    variables: { graph: config.graphId, inputs: {} },
  });
  const id = started.data.executeGraph.id;
  const live = await collect(EVENTS, { id });
  // The events kept the cached execution current.
  const cached = client.readFragment({
    id: client.cache.identify({ __typename: "Execution", id }),
    fragment: STATUS,
  });
  const full = await collect(EVENTS, { id, after: 0 });
  const resumed = {};
  for (const seq of resumePoints(full)) {
    resumed[seq] = await collect(EVENTS, { id, after: seq });
  }
  await wsClient?.dispose();
  finish({
    versions: versions.data.graphVersions.map((g) => [g.version, g.name]),
    dailyLimit: { set: limit, cached: after.me.notificationPreferences.dailyLimit },
    cachedExecution: cached,
    id,
    live,
    full,
    resumed,
    warnings,
  });
} catch (error) {
  fail(error);
}
