// The node's services, reached over gRPC-Web from the page's own origin:
// `colink serve` answers gRPC-Web next to the app, and so does Envoy when
// the app is served through it.

import { Code, ConnectError, createClient, type Client, type Interceptor } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import { AuthService } from "../../gen/ts/colink/auth/v1/auth_pb";
import { ChannelsService } from "../../gen/ts/colink/channels/v1/channels_pb";
import { FilesService } from "../../gen/ts/colink/files/v1/files_pb";
import { MessagingService } from "../../gen/ts/colink/messaging/v1/messaging_pb";
import { PresenceService } from "../../gen/ts/colink/presence/v1/presence_pb";
import { ReactionsService } from "../../gen/ts/colink/reactions/v1/reactions_pb";
import { RealtimeService } from "../../gen/ts/colink/realtime/v1/realtime_pb";
import { SearchService } from "../../gen/ts/colink/search/v1/search_pb";
import { UsersService } from "../../gen/ts/colink/users/v1/users_pb";

/** Where the access token comes from; set once signed in. */
let currentToken: () => string | undefined = () => undefined;

export function useToken(token: () => string | undefined): void {
  currentToken = token;
}

const bearer: Interceptor = (next) => (request) => {
  const token = currentToken();
  if (token) {
    request.header.set("authorization", `Bearer ${token}`);
  }
  return next(request);
};

const transport = createGrpcWebTransport({
  baseUrl: globalThis.location?.origin ?? "http://127.0.0.1:7700",
  interceptors: [bearer],
});

export const auth: Client<typeof AuthService> = createClient(AuthService, transport);
export const channels: Client<typeof ChannelsService> = createClient(ChannelsService, transport);
export const files: Client<typeof FilesService> = createClient(FilesService, transport);
export const messaging: Client<typeof MessagingService> = createClient(MessagingService, transport);
export const presence: Client<typeof PresenceService> = createClient(PresenceService, transport);
export const reactions: Client<typeof ReactionsService> = createClient(ReactionsService, transport);
export const realtime: Client<typeof RealtimeService> = createClient(RealtimeService, transport);
export const search: Client<typeof SearchService> = createClient(SearchService, transport);
export const users: Client<typeof UsersService> = createClient(UsersService, transport);

/** Whether a failed call is worth trying again as it was. */
export function isTransient(err: unknown): boolean {
  const code = ConnectError.from(err).code;
  return code === Code.Unavailable || code === Code.DeadlineExceeded || code === Code.Aborted || code === Code.Unknown;
}

/** A failed call, said in words a person understands. */
export function describe(err: unknown): string {
  const e = ConnectError.from(err);
  const detail = e.rawMessage ? ` (${e.rawMessage})` : "";
  switch (e.code) {
    case Code.InvalidArgument:
      return `That was not accepted${detail}.`;
    case Code.Unauthenticated:
      return "Your sign-in has expired or was not recognised. Please sign in again.";
    case Code.PermissionDenied:
      return `You are not allowed to do that${detail}.`;
    case Code.NotFound:
      return "That no longer exists, or you cannot see it.";
    case Code.AlreadyExists:
      return `That already exists${detail}.`;
    case Code.FailedPrecondition:
      return `That cannot be done right now${detail}.`;
    case Code.ResourceExhausted:
      return "You are doing that too often. Wait a moment and try again.";
    case Code.Unavailable:
    case Code.DeadlineExceeded:
      return "Colink cannot be reached. Check your connection; it will keep trying.";
    default:
      return "Something went wrong on the server. Try again in a moment.";
  }
}
