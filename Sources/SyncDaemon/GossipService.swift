import Foundation
import Logging
import NIOCore
import NIOPosix
import SyncFS
import SyncGossip
import SyncSecurity

/// The thin shell around `SWIMInstance`: UDP for probes and gossip, TCP (same port, preface
/// "SYNCG/1") for push/pull and fallback pings, a 10 ms tick, the known-members snapshot, and the
/// LAN beacon. Every state change happens on the one event loop, so the instance needs no lock;
/// readers (`syncd peers`) get a copy taken under `lock`.
final class GossipService: @unchecked Sendable {
    static let streamMagic: [UInt8] = Array("SYNCG/1".utf8)
    static let tick = TimeAmount.milliseconds(10)

    private let loop: EventLoop
    private let group: EventLoopGroup
    private let logger: Logger
    private let cipher: GossipCipher
    private let snapshotPath: String
    private var swim: SWIMInstance
    private var udp: Channel?
    private var beacon: Channel?
    private var ticker: RepeatedTask?
    private let lock = Lock()
    private var published: [MemberState] = []
    private var snapshotDirty = false
    private var lastSnapshot: NIODeadline = .now()
    private let clockStart = NIODeadline.now()
    /// Gives the current metadata (device, folders and sequences); polled every gossip interval.
    private let metaSource: @Sendable () -> [UInt8]
    private var lastMeta: [UInt8]
    private let beaconPort: Int?
    /// The `--join` seeds, and those of them whose last join failed (warned about once, until
    /// one answers again). Only touched on the loop.
    private var seeds: Set<Endpoint> = []
    private var failingSeeds: Set<Endpoint> = []
    /// Called on the gossip loop, after the member list is published, for every member that
    /// became alive: new, back from suspect, dead or left, or restarted (a new uid). The daemon
    /// redials it at once rather than trusting sessions that may have died meanwhile.
    var onMemberAlive: (@Sendable (MemberState) -> Void)?

    init(group: EventLoopGroup, settings: SWIMSettings, name: UInt64, endpoint: Endpoint, cipher: GossipCipher,
         snapshotPath: String, beaconPort: Int?, logger: Logger, metaSource: @escaping @Sendable () -> [UInt8]) {
        self.group = group
        self.loop = group.next()
        self.logger = logger
        self.cipher = cipher
        self.snapshotPath = snapshotPath
        self.metaSource = metaSource
        self.beaconPort = beaconPort
        let meta = metaSource()
        lastMeta = meta
        swim = SWIMInstance(settings: settings, name: name, uid: UInt64.random(in: 1...UInt64.max), endpoint: endpoint,
                            meta: meta, seed: UInt64.random(in: 0...UInt64.max), now: 0)
        published = swim.allMembers
    }

    private var now: Nanos { Nanos(NIODeadline.now().uptimeNanoseconds - clockStart.uptimeNanoseconds) }

    // MARK: lifecycle

    func start(host: String, port: Int, seeds: [Endpoint]) throws {
        udp = try DatagramBootstrap(group: loop)
            .channelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
            .channelInitializer { [self] channel in
                channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(DatagramHandler { [unowned self] in received($0, from: $1) }) }
            }
            .bind(host: host, port: port).wait()
        if let beaconPort { startBeacon(port: beaconPort) }
        let known = loadSnapshot()
        loop.execute { [self] in
            self.seeds = Set(seeds)
            let all = Array(Set(seeds + known)).filter { $0 != swim.me.endpoint }.sorted()
            if !all.isEmpty { logger.info("joining through \(all.map(\.description).joined(separator: ", "))") }
            run(swim.join(all, now: now))
        }
        ticker = loop.scheduleRepeatedTask(initialDelay: Self.tick, delay: Self.tick) { [self] _ in onTick() }
    }

    /// Graceful leave: tell a few members, give the packets a moment, stop.
    func stop() {
        try? loop.submit { [self] in run(swim.leave(now: now)) }.wait()
        Thread.sleep(forTimeInterval: 0.2)
        ticker?.cancel()
        writeSnapshot()
        try? udp?.close().wait()
        let beacon = try? loop.submit { [self] () -> Channel? in
            beaconTask?.cancel()
            beaconStopped = true
            defer { self.beacon = nil }
            return self.beacon
        }.wait()
        if let beacon { try? beacon.close().wait() }
    }

    var members: [MemberState] { lock.withLock { published } }
    var localName: UInt64 { swim.me.name }

    // MARK: inputs

    private var ticks = 0

    private func onTick() {
        ticks += 1
        if ticks % 20 == 0 { announceMeta() }   // every 200 ms: a changed sequence goes out within one gossip round
        run(swim.tick(now: now))
        if snapshotDirty && NIODeadline.now() - lastSnapshot > .seconds(5) { writeSnapshot() }
    }

    /// A folder was added or removed: announce it now rather than at the next poll, so peers
    /// that share it can connect at once.
    func metaChanged() {
        loop.execute { [self] in announceMeta() }
    }

    private func announceMeta() {
        let meta = metaSource()
        guard meta != lastMeta else { return }
        lastMeta = meta
        run(swim.updateMeta(meta, now: now))
    }

    fileprivate func received(_ packet: [UInt8], from address: SocketAddress) {
        guard let body = cipher.open(packet), let messages = try? SWIMCodec.decode(body),
              let ip = address.ipAddress, let port = address.port else {
            logger.debug("dropped an unreadable gossip packet from \(address)")
            return
        }
        run(swim.receive(messages, from: Endpoint(host: ip, port: UInt16(port)), now: now))
    }

    /// A TCP push/pull or ping request (server side); returns the reply body.
    func handleStream(_ body: [UInt8]) -> [UInt8]? {
        guard let plain = cipher.open(body), let kind = plain.first else { return nil }
        return try? loop.submit { [self] () -> [UInt8]? in
            switch kind {
            case 1:
                guard let (remote, _) = try? SWIMCodec.decodeState(Array(plain.dropFirst())) else { return nil }
                let reply = [UInt8(1)] + SWIMCodec.encodeState(swim.localState, join: false)
                run(swim.mergeRemoteState(remote, now: now))
                return cipher.seal(reply)
            case 2:
                guard plain.count == 9 else { return nil }
                let target = plain.dropFirst().reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
                return cipher.seal([2, target == swim.me.name ? 1 : 0])
            default:
                return nil
            }
        }.wait()
    }

    // MARK: directives

    /// Whether `member`'s new state is a return to life, given the list published before it.
    static func cameAlive(_ member: MemberState, before: [MemberState]) -> Bool {
        guard member.status == .alive else { return false }
        guard let previous = before.first(where: { $0.name == member.name }) else { return true }
        return previous.status != .alive || previous.uid != member.uid
    }

    private func run(_ directives: [SWIMInstance.Directive]) {
        var revived: [MemberState] = []
        for d in directives {
            switch d {
            case let .send(to, messages):
                guard let udp, let address = try? SocketAddress.makeAddressResolvingHost(to.host, port: Int(to.port)) else { continue }
                let bytes = cipher.seal(SWIMCodec.encode(messages))
                udp.writeAndFlush(AddressedEnvelope(remoteAddress: address, data: ByteBuffer(bytes: bytes)), promise: nil)
            case let .pushPull(to, join):
                let body = cipher.seal([1] + SWIMCodec.encodeState(swim.localState, join: join))
                GossipStreamClient.exchange(group: group, to: to, body: body).whenComplete { [self] result in
                    loop.execute { [self] in
                        guard case .success(let reply) = result, let plain = cipher.open(reply), plain.first == 1,
                              let (remote, _) = try? SWIMCodec.decodeState(Array(plain.dropFirst())) else {
                            if join { joinFailed(to, result) }
                            run(swim.pushPullFailed(to: to, now: now))
                            return
                        }
                        if join, failingSeeds.remove(to) != nil { logger.info("seed \(to) answered") }
                        run(swim.mergeRemoteState(remote, now: now))
                    }
                }
            case let .streamPing(to, target, seq):
                var body: [UInt8] = [2]
                for s in stride(from: 56, through: 0, by: -8) { body.append(UInt8(truncatingIfNeeded: target >> UInt64(s))) }
                GossipStreamClient.exchange(group: group, to: to, body: cipher.seal(body)).whenComplete { [self] result in
                    loop.execute { [self] in
                        var ok = false, refused = false
                        switch result {
                        case .success(let reply): ok = cipher.open(reply) == [2, 1]
                        case .failure(let error): refused = Self.isConnectionRefused(error)
                        }
                        run(swim.streamPingResult(seq: seq, reachable: ok, refused: refused, now: now))
                    }
                }
            case .changed(let m):
                let device = MemberMeta(decoding: m.meta).map { DeviceID(bytes: $0.device)?.description ?? "?" } ?? "?"
                // A live member announcing new metadata (its sequences move with every change) is
                // routine; a change of status is news.
                let routine = published.first { $0.name == m.name }?.status == m.status
                logger.log(level: routine ? .debug : .info, "member \(device) at \(m.endpoint) is \(m.status.name) (incarnation \(m.incarnation))")
                snapshotDirty = true
                if m.name != swim.me.name && Self.cameAlive(m, before: published) {
                    revived.removeAll { $0.name == m.name }
                    revived.append(m)
                }
            }
        }
        let all = swim.allMembers
        lock.withLock { published = all }
        if let onMemberAlive { revived.forEach(onMemberAlive) }
    }

    /// A join push/pull failed: a `--join` seed that fails is a warning (once, until it answers;
    /// joining is retried with backoff meanwhile), a member remembered from the last run only debug.
    private func joinFailed(_ to: Endpoint, _ result: Result<[UInt8], Error>) {
        let why: String
        switch result {
        case .failure(let error): why = Self.describe(error)
        case .success: why = cipher.key == nil ? "its reply was unreadable" : "its reply was unreadable (a different --gossip-key?)"
        }
        if seeds.contains(to) {
            if failingSeeds.insert(to).inserted {
                logger.warning("seed \(to) cannot be joined: \(why); retrying with backoff")
            } else {
                logger.debug("seed \(to) still cannot be joined: \(why)")
            }
        } else {
            logger.debug("known member \(to) cannot be joined: \(why)")
        }
    }

    /// "Connection refused" rather than NIO's nested connection-error description.
    static func describe(_ error: Error) -> String {
        if let e = error as? IOError { return String(cString: strerror(e.errnoCode)) }
        if let e = error as? NIOConnectionError {
            if let dns = e.dnsAError ?? e.dnsAAAAError { return "cannot resolve \(e.host): \(dns)" }
            if let first = e.connectionErrors.first { return describe(first.error) }
        }
        if let e = error as? ChannelError, case .connectTimeout = e { return "no answer (timed out)" }
        return "\(error)"
    }

    static func isConnectionRefused(_ error: Error) -> Bool {
        if let e = error as? IOError { return e.errnoCode == ECONNREFUSED }
        if let e = error as? NIOConnectionError {
            return !e.connectionErrors.isEmpty && e.connectionErrors.allSatisfy { isConnectionRefused($0.error) }
        }
        return false
    }

    // MARK: known-members snapshot

    /// Endpoints of the members known, so a restart rejoins without seeds: the alive ones first,
    /// then those that left or died — when every member stops together (a cluster restarted, a
    /// power cut), each one's last view has the others left, and those are exactly whom it must
    /// find again. Members are forgotten with their tombstones (`SWIMSettings.tombstoneTimeout`).
    /// A view with no other member leaves the file as it is rather than emptying it.
    private func writeSnapshot() {
        snapshotDirty = false
        lastSnapshot = .now()
        let others = members.filter { $0.name != swim.me.name }
        guard !others.isEmpty else { return }
        let ordered = others.filter { $0.status == .alive || $0.status == .suspect } + others.filter { $0.status == .left || $0.status == .dead }
        var endpoints: [String] = []
        for m in ordered where !endpoints.contains(m.endpoint.description) { endpoints.append(m.endpoint.description) }
        guard let data = try? JSONSerialization.data(withJSONObject: ["members": endpoints], options: [.sortedKeys]) else { return }
        // 0600 from the start, whatever the umask; written beside and renamed, so never torn.
        let temp = snapshotPath + ".tmp"
        unlink(temp)
        let fd = open(temp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0o600)
        guard fd >= 0 else { return }
        let written = data.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        close(fd)
        if written == data.count { rename(temp, snapshotPath) } else { unlink(temp) }
    }

    private func loadSnapshot() -> [Endpoint] {
        guard let data = FileManager.default.contents(atPath: snapshotPath),
              let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
              let list = object["members"] as? [String] else { return [] }
        return list.compactMap(Endpoint.init)
    }

    // MARK: LAN beacon

    /// Whether the beacon works, and what was last said about it (logged on changes only).
    private var beaconProblem: String?
    private var beaconTask: RepeatedTask?
    /// Set by `stop()`: a bind still in flight closes what it bound.
    private var beaconStopped = false

    /// Every 5 s a broadcast "SYNCB/1 ‖ sealed(endpoint)" on the beacon port; hearing one from an
    /// unknown member starts a push/pull with it. Best effort: networks that drop broadcasts
    /// simply never deliver it (Docs/UserGuide.md). A network that is not up yet (no route,
    /// no address: ENETUNREACH, EADDRNOTAVAIL) is no reason to give up: a socket that cannot be
    /// bound is bound again, and one a failed send closed is reopened and sent through, at the
    /// next beacon.
    private func startBeacon(port: Int) {
        bindBeacon(port: port)
        beaconTask = loop.scheduleRepeatedTask(initialDelay: .seconds(1), delay: .seconds(5)) { [self] _ in sendBeacon(port: port) }
    }

    /// Binds the beacon's socket, and sends a beacon through it at once when `thenSend`.
    private func bindBeacon(port: Int, thenSend: Bool = false) {
        DatagramBootstrap(group: loop)
            .channelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
            .channelOption(ChannelOptions.socketOption(NIOBSDSocket.Option(rawValue: SO_REUSEPORT)), value: 1)
            .channelOption(ChannelOptions.socketOption(.so_broadcast), value: 1)
            .channelInitializer { [self] channel in
                channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(DatagramHandler { [unowned self] packet, _ in heardBeacon(packet) }) }
            }
            .bind(host: "0.0.0.0", port: port)
            .hop(to: loop)
            .whenComplete { [self] result in
                switch result {
                case .success(let channel) where beaconStopped: channel.close(promise: nil)
                case .success(let channel):
                    beacon = channel
                    if thenSend, channel.isActive { sendBeacon(port: port) }
                case .failure(let error): beaconFailed("cannot listen on UDP port \(port): \(Daemon.describe(error))")
                }
            }
    }

    /// On the loop: a socket that is missing or was closed (a failed send closes it) is bound again.
    private func sendBeacon(port: Int) {
        guard let beacon, beacon.isActive else {
            beacon = nil
            bindBeacon(port: port, thenSend: true)
            return
        }
        guard let address = try? SocketAddress(ipAddress: "255.255.255.255", port: port) else { return }
        let body = Array("SYNCB/1".utf8) + cipher.seal(Array(swim.me.endpoint.description.utf8))
        beacon.writeAndFlush(AddressedEnvelope(remoteAddress: address, data: ByteBuffer(bytes: body))).whenComplete { [self] result in
            switch result {
            case .success: beaconWorks()
            case .failure(let error): beaconFailed("cannot send: \(Daemon.describe(error))")
            }
        }
    }

    private func beaconFailed(_ problem: String) {
        let changed = lock.withLock { () -> Bool in defer { beaconProblem = problem }; return beaconProblem != problem }
        if changed { logger.notice("LAN beacon \(problem); retrying every 5 s (a network that comes up later is used then)") }
    }

    private func beaconWorks() {
        let was = lock.withLock { () -> String? in defer { beaconProblem = nil }; return beaconProblem }
        if was != nil { logger.notice("LAN beacon sending again") }
    }

    fileprivate func heardBeacon(_ packet: [UInt8]) {
        guard packet.starts(with: Array("SYNCB/1".utf8)), let plain = cipher.open(Array(packet.dropFirst(7))),
              let text = String(validating: plain, as: UTF8.self), let endpoint = Endpoint(text),
              endpoint != swim.me.endpoint, !swim.allMembers.contains(where: { $0.endpoint == endpoint && $0.status == .alive })
        else { return }
        logger.info("heard a LAN beacon from \(endpoint)")
        run([.pushPull(to: endpoint, join: true)])
    }
}

/// Hands every datagram's bytes and sender to `onPacket` (gossip packets and LAN beacons alike).
private final class DatagramHandler: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = AddressedEnvelope<ByteBuffer>
    let onPacket: ([UInt8], SocketAddress) -> Void
    init(onPacket: @escaping ([UInt8], SocketAddress) -> Void) { self.onPacket = onPacket }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var envelope = unwrapInboundIn(data)
        onPacket(envelope.data.readBytes(length: envelope.data.readableBytes) ?? [], envelope.remoteAddress)
    }
}

/// One request/response over TCP: `"SYNCG/1" ‖ length:u32 ‖ body`, answered by `length:u32 ‖ body`.
enum GossipStreamClient {
    static let maxBody = 16 << 20

    static func exchange(group: EventLoopGroup, to endpoint: Endpoint, body: [UInt8]) -> EventLoopFuture<[UInt8]> {
        let promise = group.next().makePromise(of: [UInt8].self)
        ClientBootstrap(group: group)
            .connectTimeout(.seconds(2))
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(ResponseHandler(promise: promise))
                }
            }
            .connect(host: endpoint.host, port: Int(endpoint.port))
            .whenComplete { result in
                switch result {
                case .failure(let error): promise.fail(error)
                case .success(let channel):
                    var buffer = channel.allocator.buffer(capacity: body.count + 11)
                    buffer.writeBytes(GossipService.streamMagic)
                    buffer.writeInteger(UInt32(body.count))
                    buffer.writeBytes(body)
                    channel.writeAndFlush(buffer, promise: nil)
                    channel.eventLoop.scheduleTask(in: .seconds(5)) { channel.close(promise: nil) }
                }
            }
        return promise.futureResult
    }

    final class ResponseHandler: ChannelInboundHandler, @unchecked Sendable {
        typealias InboundIn = ByteBuffer
        let promise: EventLoopPromise<[UInt8]>
        var buffer: [UInt8] = []
        var done = false
        init(promise: EventLoopPromise<[UInt8]>) { self.promise = promise }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            var b = unwrapInboundIn(data)
            buffer += b.readBytes(length: b.readableBytes) ?? []
            guard buffer.count >= 4 else { return }
            let n = Int(buffer[0]) << 24 | Int(buffer[1]) << 16 | Int(buffer[2]) << 8 | Int(buffer[3])
            if n > GossipStreamClient.maxBody { finish(context, .failure(GossipError("oversized reply"))); return }
            if buffer.count >= 4 + n { finish(context, .success(Array(buffer[4..<4 + n]))) }
        }

        func channelInactive(context: ChannelHandlerContext) { finish(context, .failure(GossipError("closed"))) }
        func errorCaught(context: ChannelHandlerContext, error: Error) { finish(context, .failure(error)) }

        private func finish(_ context: ChannelHandlerContext, _ result: Result<[UInt8], Error>) {
            guard !done else { return }
            done = true
            promise.completeWith(result)
            context.close(promise: nil)
        }
    }
}

/// Server side of the stream protocol, installed by `ProtocolSniffer` for "SYNCG/1" connections.
final class GossipStreamHandler: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer
    let service: GossipService
    var buffer: [UInt8] = []
    private static let work = DispatchQueue(label: "syncd.gossip.stream", attributes: .concurrent)

    init(service: GossipService) { self.service = service }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var b = unwrapInboundIn(data)
        buffer += b.readBytes(length: b.readableBytes) ?? []
        let header = GossipService.streamMagic.count + 4
        guard buffer.count >= header else { return }
        let at = GossipService.streamMagic.count
        let n = Int(buffer[at]) << 24 | Int(buffer[at + 1]) << 16 | Int(buffer[at + 2]) << 8 | Int(buffer[at + 3])
        guard n <= GossipStreamClient.maxBody else { context.close(promise: nil); return }
        guard buffer.count >= header + n else { return }
        let body = Array(buffer[header..<header + n])
        buffer = []
        let channel = context.channel
        let service = self.service
        Self.work.async {
            guard let reply = service.handleStream(body) else { channel.close(promise: nil); return }
            var out = channel.allocator.buffer(capacity: reply.count + 4)
            out.writeInteger(UInt32(reply.count))
            out.writeBytes(reply)
            channel.writeAndFlush(out).whenComplete { _ in channel.close(promise: nil) }
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) { context.close(promise: nil) }
}
