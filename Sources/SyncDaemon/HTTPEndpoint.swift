import Foundation
import Hummingbird
import Logging
import NIOCore
import ServiceLifecycle
import SyncFS

/// Who may ask the HTTP endpoint what (pure; Docs/Operations.md, "The HTTP endpoint"): with a
/// token configured, every path but `/healthz` and `/readyz` needs it, as `Authorization: Bearer
/// TOKEN` or as the password of HTTP basic authentication (any user name: that is what a browser
/// can send). Without a token (loopback only, `DaemonConfiguration.validate`) everything is open.
enum HTTPAccess {
    /// Paths anyone who can connect may ask: they tell whether the process is up and ready, nothing more.
    static func isOpen(_ path: String) -> Bool { path == "/healthz" || path == "/readyz" }

    static func allows(authorization: String?, token: String?) -> Bool {
        guard let token else { return true }
        guard let header = authorization?.trimmingCharacters(in: .whitespaces) else { return false }
        let expected = Array(token.utf8)
        if header.lowercased().hasPrefix("bearer ") {
            return constantTimeEquals(Array(header.dropFirst(7).trimmingCharacters(in: .whitespaces).utf8), expected)
        }
        if header.lowercased().hasPrefix("basic "),
           let decoded = Data(base64Encoded: String(header.dropFirst(6)).trimmingCharacters(in: .whitespaces)),
           let colon = decoded.firstIndex(of: UInt8(ascii: ":")) {
            return constantTimeEquals(Array(decoded[decoded.index(after: colon)...]), expected)
        }
        return false
    }

    /// Compares every byte whatever the first difference, so the time taken tells nothing of the
    /// token (only its length, which is not secret).
    static func constantTimeEquals(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        guard a.count == b.count else { return false }
        var difference: UInt8 = 0
        for i in a.indices { difference |= a[i] ^ b[i] }
        return difference == 0
    }

    /// `/readyz`: why the daemon is not ready (a folder in error, a folder that never reached a
    /// peer), empty when it is. Storage-only and peerless setups wait for a first peer too.
    static func notReady(_ report: StatusReport) -> [String] {
        var reasons: [String] = []
        let inError = report.folders.filter { $0.state == "error" }.count
        let lonely = report.folders.filter { $0.reachedPeer == false }.count
        if inError > 0 { reasons.append("\(inError) folder\(inError == 1 ? "" : "s") in error") }
        if lonely > 0 { reasons.append("\(lonely) folder\(lonely == 1 ? " has" : "s have") never reached a peer") }
        return reasons
    }

    /// One event as a server-sent event: its kind as the event name, its JSON as the data.
    static func serverSentEvent(_ event: DaemonEvent) -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        let json = (try? encoder.encode(event)).map { String(decoding: $0, as: UTF8.self) } ?? "{}"
        return "event: \(event.kind.rawValue)\ndata: \(json)\n\n"
    }
}

/// The HTTP endpoint (`--http`): a part of the daemon's `ServiceGroup`, after the control socket.
/// It serves, through hummingbird: `/healthz` (the process is up), `/readyz` (503 while a folder
/// is in error or has never reached a peer), `/api/status` (`syncd status --json`'s report),
/// `/api/events` (`DaemonEvents` as server-sent events), `/metrics` (`DaemonMetrics`) and the
/// status page at `/` (`StatusPage`).
final class HTTPEndpoint: Service, CustomStringConvertible, @unchecked Sendable {
    let description = "http"
    private let listen: String
    private let token: String?
    private let events: DaemonEvents
    private let logger: Logger
    private let status: @Sendable () throws -> StatusReport
    private let bound: @Sendable (String) -> Void
    private let metrics = DaemonMetrics()
    /// What `/api/events` clients read: the daemon's events, relayed, so that shutdown can end
    /// every open stream (`finish`) without ending the daemon's own subscribers.
    private let relay = DaemonEvents()
    let after: StartGate?
    let started = StartGate()

    /// `status`: the daemon's status report; `bound`: told the address once it listens.
    init(listen: String, token: String?, events: DaemonEvents, logger: Logger, after: StartGate?,
         status: @escaping @Sendable () throws -> StatusReport, bound: @escaping @Sendable (String) -> Void) {
        self.listen = listen; self.token = token; self.events = events; self.logger = logger
        self.after = after; self.status = status; self.bound = bound
    }

    func run() async throws {
        if let after {
            guard (try? await cancelWhenGracefulShutdown({ try await after.wait() })) != nil else { return }
        }
        guard let endpoint = DaemonConfiguration.hostPort(listen, allowingPortZero: true) else {
            throw Daemon.StartError.listen("--http \(listen) is not HOST:PORT")
        }
        let started = self.started, bound = self.bound, logger = self.logger, host = endpoint.host
        let app = Application(
            router: makeRouter(),
            configuration: .init(address: .hostname(endpoint.host, port: Int(endpoint.port)), serverName: "syncd"),
            onServerRunning: { channel in
                let port = channel.localAddress?.port ?? Int(endpoint.port)
                let address = host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
                bound(address)
                logger.info("http on \(address)\(self.token == nil ? " (no token: loopback only)" : ", token required")")
                started.open()
            },
            logger: logger)
        let feed = events.subscribe()
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await app.run() }
            group.addTask { [metrics, relay] in
                for await event in feed.cancelOnGracefulShutdown() {
                    metrics.observe(event)
                    if event.kind != .scanned { relay.emit(event) }
                }
            }
            group.addTask { [relay] in
                try? await gracefulShutdown()
                relay.finish()   // open /api/events responses end, so the server can drain
            }
            // The server ends on graceful shutdown; so do the other two. An error (a port taken) ends all.
            do {
                for try await _ in group {}
            } catch {
                group.cancelAll()
                throw Daemon.StartError.listen("cannot serve HTTP on \(listen): \(Daemon.describe(error))")
            }
        }
    }

    private func makeRouter() -> Router<BasicRequestContext> {
        let router = Router()
        router.add(middleware: TokenMiddleware(token: token))
        let status = self.status, relay = self.relay, metrics = self.metrics, events = self.events
        router.get("/healthz") { _, _ in Self.text("ok\n") }
        router.get("/readyz") { _, _ in
            let reasons = (try? HTTPAccess.notReady(status())) ?? ["status unavailable"]
            return Self.text(reasons.isEmpty ? "ready\n" : "not ready: " + reasons.joined(separator: "; ") + "\n",
                             status: reasons.isEmpty ? .ok : .serviceUnavailable)
        }
        router.get("/api/status") { _, _ in
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
            let body = try encoder.encode(try status())
            return Response(status: .ok, headers: [.contentType: "application/json"],
                            body: .init(byteBuffer: ByteBuffer(bytes: body)))
        }
        router.get("/metrics") { _, _ in
            Self.text(metrics.render(try status()), contentType: "text/plain; version=0.0.4; charset=utf-8")
        }
        router.get("/api/events") { _, _ in
            let stream = relay.subscribe()   // before the response starts: nothing emitted after it is missed
            return Response(status: .ok, headers: [.contentType: "text/event-stream", .cacheControl: "no-cache"],
                            body: ResponseBody { writer in
                                try await writer.write(ByteBuffer(string: ": syncd events\nretry: 2000\n\n"))
                                for await event in stream { try await writer.write(ByteBuffer(string: HTTPAccess.serverSentEvent(event))) }
                                try await writer.finish(nil)
                            })
        }
        router.get("/") { _, _ in
            let page = StatusPage.render(try status(), recent: events.recent, now: Date().timeIntervalSince1970)
            return Self.text(page, contentType: "text/html; charset=utf-8")
        }
        return router
    }

    private static func text(_ text: String, status: HTTPResponse.Status = .ok, contentType: String = "text/plain; charset=utf-8") -> Response {
        Response(status: status, headers: [.contentType: contentType], body: .init(byteBuffer: ByteBuffer(string: text)))
    }
}

/// 401 with a basic-authentication challenge (so a browser asks for the token) unless
/// `HTTPAccess` allows the request.
struct TokenMiddleware<Context: RequestContext>: RouterMiddleware {
    let token: String?

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        guard HTTPAccess.isOpen(request.uri.path) || HTTPAccess.allows(authorization: request.headers[.authorization], token: token) else {
            return Response(status: .unauthorized,
                            headers: [.contentType: "text/plain; charset=utf-8", .wwwAuthenticate: "Basic realm=\"syncd\", charset=\"UTF-8\""],
                            body: .init(byteBuffer: ByteBuffer(string: "a token is required: Authorization: Bearer TOKEN\n")))
        }
        return try await next(request, context)
    }
}
