import Dispatch
import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import SyncCore
import SyncFS
import SyncSecurity
import SyncWire

/// Accepts peer sessions on the daemon's `--listen` address (TCP). A thin NIO shell: every byte
/// goes through a `SessionMachine`, every message to the folder's `FolderExchange`.
final class SessionServer {
    private let group: MultiThreadedEventLoopGroup
    private let identity: DeviceIdentity
    private let logger: Logger
    private let exchanges: @Sendable () -> [[UInt8]: FolderExchange]
    private let keepalive: SessionLiveness.Settings
    /// What sessions accepted here offer in the handshake.
    private let features: SessionMachine.Features
    private let table: SessionTable
    private var channel: Channel?
    /// Connections that start with "SYNCG/1" are gossip push/pull and fallback pings. Set once
    /// gossip runs, read on the event loop.
    var gossip: GossipService? {
        get { gossipService.withLock { $0 } }
        set { gossipService.withLock { $0 = newValue } }
    }
    private let gossipService = Locked<GossipService?>(nil)

    /// `exchanges` gives the folders this device holds, by public folder id, at accept time.
    init(group: MultiThreadedEventLoopGroup, identity: DeviceIdentity, logger: Logger,
         keepalive: SessionLiveness.Settings, features: SessionMachine.Features = [], table: SessionTable,
         exchanges: @escaping @Sendable () -> [[UInt8]: FolderExchange]) {
        self.group = group
        self.keepalive = keepalive
        self.features = features
        self.table = table
        self.identity = identity
        self.logger = logger
        self.exchanges = exchanges
    }

    /// Binds `host:port` (port 0 picks a free one) and returns the bound address.
    func start(listen: String) throws -> String {
        let (host, port) = try Self.split(listen)
        let identity = self.identity, logger = self.logger, exchanges = self.exchanges
        let keepalive = self.keepalive, table = self.table, features = self.features
        let gossip = gossipService
        let channel = try ServerBootstrap(group: group)
            .serverChannelOption(ChannelOptions.backlog, value: 128)
            .serverChannelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(ChannelOptions.tcpOption(.tcp_nodelay), value: 1)  // IPPROTO_TCP, not SOL_SOCKET
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(ProtocolSniffer(route: { prefix in
                        if prefix == GossipService.streamMagic, let service = gossip.withLock({ $0 }) { return GossipStreamHandler(service: service) }
                        let folders = exchanges()
                        let machine = SessionMachine(responderFor: folders.mapValues(\.sessionPSK), staticKey: identity.privateKey,
                                                     features: features)
                        return SessionHandler(machine: machine, exchanges: folders, logger: logger,
                                              keepalive: keepalive, table: table, dials: false)
                    }))
                }
            }
            .bind(host: host, port: port)
            .wait()
        self.channel = channel
        let bound = channel.localAddress
        return "\(bound?.ipAddress ?? host):\(bound?.port ?? port)"
    }

    func stop() {
        try? channel?.close().wait()
    }

    struct AddressError: Error, CustomStringConvertible {
        let text: String
        var description: String { "--listen \(text) is not HOST:PORT" }
    }

    static func split(_ address: String) throws -> (String, Int) {
        guard let colon = address.lastIndex(of: ":"), let port = Int(address[address.index(after: colon)...]),
              (0...65535).contains(port) else { throw AddressError(text: address) }
        var host = String(address[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        return (host.isEmpty ? "0.0.0.0" : host, port)
    }
}

/// One session: bytes in through the machine, messages out to the folder's exchange (on a serial
/// queue, since it touches the index and the disk), replies back through the machine on the loop.
/// Once established, a `SessionLiveness` pings every keepalive interval and closes the session
/// when nothing arrived for the keepalive timeout; pings and pongs are answered here, on the loop,
/// so a busy exchange never delays them.
final class SessionHandler: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    /// A peer that has not finished the handshake by then is dropped.
    static let handshakeTimeout = TimeAmount.seconds(10)

    private var machine: SessionMachine
    private let exchanges: [[UInt8]: FolderExchange]
    private var exchange: FolderExchange?
    private var link: FolderExchange.PeerLink?
    private var context: ChannelHandlerContext?
    private var peer: DeviceID?
    private var logger: Logger
    private let work = DispatchQueue(label: "syncd.session")
    /// Bytes written to the channel and not yet to its socket.
    private let unwritten = NIOLockedValueBox(0)
    private var timeout: Scheduled<Void>?
    private let keepalive: SessionLiveness.Settings
    private var liveness: SessionLiveness?
    private var livenessTimer: Scheduled<Void>?
    private let table: SessionTable?
    /// Whether this side dialled (and so redials once the session is gone).
    private let dials: Bool

    init(machine: SessionMachine, exchanges: [[UInt8]: FolderExchange], logger: Logger,
         keepalive: SessionLiveness.Settings, table: SessionTable?, dials: Bool) {
        self.machine = machine
        self.exchanges = exchanges
        self.logger = logger
        self.keepalive = keepalive
        self.table = table
        self.dials = dials
    }

    /// The keepalive's clock: monotonic, as an offset from the system's uptime origin.
    private static var now: Duration { .nanoseconds(NIODeadline.now().uptimeNanoseconds) }

    private var begun = false

    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { begin(context) }
    }

    func channelActive(context: ChannelHandlerContext) {
        begin(context)
        context.fireChannelActive()
    }

    private func begin(_ context: ChannelHandlerContext) {
        guard !begun else { return }
        begun = true
        logger[metadataKey: "peer"] = "\(context.remoteAddress?.description ?? "?")"
        let channel = context.channel
        timeout = context.eventLoop.scheduleTask(in: Self.handshakeTimeout) { [self] in
            if !machine.isEstablished {
                logger.warning("session dropped: no handshake within \(Self.handshakeTimeout.nanoseconds / 1_000_000_000) s")
                channel.close(promise: nil)
            }
        }
        run(machine.start(), context: context)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var buffer = unwrapInboundIn(data)
        let bytes = buffer.readBytes(length: buffer.readableBytes) ?? []
        liveness?.onFrameReceived(now: Self.now)
        run(machine.receive(bytes), context: context)
    }

    func channelInactive(context: ChannelHandlerContext) {
        timeout?.cancel()
        livenessTimer?.cancel()
        table?.remove(ObjectIdentifier(self))
        if let link { exchange?.detach(link) }
        self.context = nil
        if let peer { logger.info("session with \(peer) ended") }
    }

    /// Sends a message the folder's exchange produced on its own (pushes, requests, acks);
    /// `written`, if given, is called once it is handed to the socket or cannot be.
    private func sendNow(_ message: SessionMessage, written: (@Sendable () -> Void)? = nil) {
        guard let context else { written?(); return }
        let promise = written.map { done in
            let p = context.eventLoop.makePromise(of: Void.self)
            p.futureResult.whenComplete { _ in done() }
            return p
        }
        run(machine.send(message), context: context, written: promise)
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        logger.info("session error: \(error)")
        context.close(promise: nil)
    }

    /// `written`: completed by the last write of these directives, or at once when nothing is
    /// written (the session closed).
    private func run(_ directives: [SessionMachine.Directive], context: ChannelHandlerContext,
                     written: EventLoopPromise<Void>? = nil) {
        var wrote = false
        var written = written
        let lastSend = directives.lastIndex { if case .send = $0 { true } else { false } }
        defer { written?.succeed() }
        for (i, directive) in directives.enumerated() {
            switch directive {
            case .send(let bytes):
                // Count what waits for the socket (PeerLink.backlog: deflate only when it piles up).
                let count = bytes.count
                unwritten.withLockedValue { $0 += count }
                let sent = context.eventLoop.makePromise(of: Void.self)
                sent.futureResult.whenComplete { [unwritten] _ in unwritten.withLockedValue { $0 -= count } }
                if i == lastSend, let written { sent.futureResult.cascade(to: written) }
                context.write(wrapOutboundOut(ByteBuffer(bytes: bytes)), promise: sent)
                if i == lastSend { written = nil }
                wrote = true
            case .established(let p):
                timeout?.cancel()
                peer = p.device
                exchange = exchanges[p.folderID]
                logger[metadataKey: "device"] = "\(p.device.name)"
                logger.info("session established with \(p.device) for folder \(Base32.encode(p.folderID))")
                self.context = context
                liveness = SessionLiveness(settings: keepalive, now: Self.now)
                let channel = context.channel
                table?.register(ObjectIdentifier(self), .init(device: p.device.short, folderID: p.folderID, rtt: nil) {
                    [weak self] quiet, reason in
                    channel.eventLoop.execute { [weak self] in self?.closeIfQuiet(longerThan: quiet, reason: reason) }
                })
                if let exchange {
                    let link = FolderExchange.PeerLink(device: p.device, deflate: p.features.contains(.deflate)) { [weak self] message in
                        channel.eventLoop.execute { [weak self] in self?.sendNow(message) }
                    }
                    link.backlog = { [unwritten] in unwritten.withLockedValue { $0 } }
                    link.sendWritten = { [weak self] message, written in
                        channel.eventLoop.execute { [weak self] in
                            guard let self else { return written() }
                            self.sendNow(message, written: written)
                        }
                    }
                    link.close = { [weak self] reason in
                        channel.eventLoop.execute { [weak self] in
                            guard let self, let context = self.context else { return }
                            self.run(self.machine.close(reason), context: context)
                        }
                    }
                    self.link = link
                    exchange.attach(link)
                }
                // After the hello `attach` queued on the loop: hello stays the first message.
                channel.eventLoop.execute { [weak self] in self?.livenessTick() }
            case .deliver(.ping(let n)):
                // Queued like the hello `attach` sends, so a ping that arrives with the handshake
                // is still answered after our hello.
                context.eventLoop.execute { [weak self] in self?.sendNow(.pong(n)) }
            case .deliver(.pong(let n)):
                liveness?.onPong(n, now: Self.now)
                table?.update(ObjectIdentifier(self), rtt: liveness?.rtt)
            case .deliver(let message):
                deliver(message, context: context)
            case .close(let failure):
                if wrote { context.flush() }
                switch failure {
                case .closedByPeer, .local: logger.info("session closed: \(failure)")
                default: logger.warning("session closed: \(failure)")
                }
                context.close(promise: nil)
                return
            }
        }
        if wrote { context.flush() }
    }

    /// Carries out what the keepalive says is due, then sleeps until its next deadline.
    private func livenessTick() {
        guard let context, var state = liveness, !machine.isClosed else { return }
        let actions = state.onTick(now: Self.now)
        liveness = state
        for action in actions {
            switch action {
            case .sendPing(let n):
                run(machine.send(.ping(n)), context: context)
            case .close(let silence):
                let then = dials ? "closing and redialling" : "closing (the peer redials)"
                logger.warning("peer \(peer.map { "\($0)" } ?? "?") silent for \(silence.secondsText) s; \(then)")
                run(machine.close("silent for \(silence.secondsText) s"), context: context)
                return
            }
        }
        guard !machine.isClosed else { return }
        let deadline = NIODeadline.uptimeNanoseconds(UInt64(max(0, state.nextDeadline.nanoseconds)))
        livenessTimer = context.eventLoop.scheduleTask(deadline: deadline) { [weak self] in self?.livenessTick() }
    }

    /// Gossip lost and found the peer: a session that has been quiet meanwhile is likely dead.
    private func closeIfQuiet(longerThan quiet: Duration, reason: String) {
        guard let context, let state = liveness, !machine.isClosed else { return }
        let silence = state.silence(now: Self.now)
        guard silence > quiet else { return }
        logger.info("\(reason); session quiet for \(silence.secondsText) s, closing it")
        run(machine.close(reason), context: context)
    }

    private func deliver(_ message: SessionMessage, context: ChannelHandlerContext) {
        guard let exchange, let link else { return }
        let loop = context.eventLoop
        let box = NIOLoopBound(context, eventLoop: loop)
        work.async { [self] in
            let outcome = exchange.handle(message, from: link)
            // Most messages (answers, acknowledgements) need no reply: no hop back to the loop.
            if case .reply(let messages) = outcome, messages.isEmpty { return }
            loop.execute { [self] in
                let context = box.value
                switch outcome {
                case .reply(let messages):
                    run(messages.flatMap { machine.send($0) }, context: context)
                case .refuse(let reason):
                    logger.warning("\(reason) — closing the session")
                    run(machine.close(reason), context: context)
                }
            }
        }
    }
}

/// Reads the first 7 bytes of a connection and hands it to the right protocol: a session
/// ("SYNCD/1", or anything else, which the session machine then refuses) or gossip ("SYNCG/1").
final class ProtocolSniffer: ChannelInboundHandler, RemovableChannelHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    private let route: ([UInt8]) -> ChannelHandler
    private var buffered: ByteBuffer?
    private var timeout: Scheduled<Void>?

    init(route: @escaping ([UInt8]) -> ChannelHandler) { self.route = route }

    func channelActive(context: ChannelHandlerContext) {
        let channel = context.channel
        timeout = context.eventLoop.scheduleTask(in: SessionHandler.handshakeTimeout) { channel.close(promise: nil) }
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var incoming = unwrapInboundIn(data)
        if buffered == nil { buffered = incoming } else { buffered!.writeBuffer(&incoming) }
        guard let bytes = buffered, bytes.readableBytes >= GossipService.streamMagic.count else { return }
        timeout?.cancel()
        let prefix = Array(bytes.readableBytesView.prefix(GossipService.streamMagic.count))
        let handler = route(prefix)
        do {
            try context.pipeline.syncOperations.addHandler(handler, position: .after(self))
        } catch {
            context.close(promise: nil)
            return
        }
        buffered = nil
        context.fireChannelRead(wrapInboundOut(bytes))
        context.pipeline.syncOperations.removeHandler(self, promise: nil)
    }
}

extension ShortDeviceID {
    /// How logs name a device: the first group of its id, as `syncd status` shows it (`DeviceID.name`).
    var deviceName: String { DeviceID.name(of: self) }
}

extension Duration {
    /// Whole nanoseconds (saturating), for NIO's clock.
    var nanoseconds: Int64 {
        let (s, atto) = components
        let (ns, overflow) = s.multipliedReportingOverflow(by: 1_000_000_000)
        return overflow ? (s < 0 ? .min : .max) : ns &+ atto / 1_000_000_000
    }

    /// Seconds to a tenth for log lines: "6", "0.5", "12.3".
    var secondsText: String {
        let tenths = (nanoseconds + 50_000_000) / 100_000_000
        return tenths % 10 == 0 ? String(tenths / 10) : "\(tenths / 10).\(tenths % 10)"
    }
}
