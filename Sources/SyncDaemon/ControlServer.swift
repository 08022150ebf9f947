import Foundation
import Logging
import NIOCore
import NIOPosix

/// The unix-socket control server: a thin NIO shell that frames lines, decodes JSON and hands
/// each request to `handle` off the event loop (requests may touch the disk and the index).
final class ControlServer {
    private let group: MultiThreadedEventLoopGroup
    private let socketPath: String
    private let logger: Logger
    private let handle: @Sendable (ControlRequest) -> ControlResponse
    private var channel: Channel?
    /// The group whose members may connect (socket 0660), nil for the daemon's user only (0600).
    private let socketGroup: gid_t?

    init(group: MultiThreadedEventLoopGroup, socketPath: String, socketGroup: gid_t? = nil, logger: Logger,
         handle: @escaping @Sendable (ControlRequest) -> ControlResponse) {
        self.socketGroup = socketGroup
        self.group = group
        self.socketPath = socketPath
        self.logger = logger
        self.handle = handle
    }

    func start() throws {
        unlink(socketPath)  // a stale socket from a crashed daemon (the home lock proves none runs)
        let handle = self.handle
        let logger = self.logger
        let old = umask(0o177)
        defer { umask(old) }
        channel = try ServerBootstrap(group: group)
            .serverChannelOption(ChannelOptions.backlog, value: 64)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(LineDecoder(limit: 1 << 20)))
                    try channel.pipeline.syncOperations.addHandler(ControlHandler(handle: handle, logger: logger))
                }
            }
            .bind(unixDomainSocketPath: socketPath)
            .wait()
        // Made 0600 by the umask above, opened to the group only once it is the group's.
        if let socketGroup {
            guard chown(socketPath, uid_t.max, socketGroup) == 0 else {
                let why = String(cString: strerror(errno))
                try? channel?.close().wait()
                throw ControlSocketError(description: "cannot give the control socket \(socketPath) to group \(socketGroup): \(why) (the daemon's user must be root or a member of the group)")
            }
            chmod(socketPath, 0o660)
        }
    }

    func stop() {
        try? channel?.close().wait()
        unlink(socketPath)
    }
}

struct ControlSocketError: Error, CustomStringConvertible { let description: String }

/// Splits the byte stream at '\n'; a line longer than `limit` is an error that closes the connection.
struct LineDecoder: ByteToMessageDecoder {
    typealias InboundOut = ByteBuffer
    let limit: Int

    struct LineTooLong: Error {}

    mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        if let nl = buffer.readableBytesView.firstIndex(of: UInt8(ascii: "\n")) {
            let line = buffer.readSlice(length: nl - buffer.readerIndex)!
            buffer.moveReaderIndex(forwardBy: 1)
            context.fireChannelRead(Self.wrapInboundOut(line))
            return .continue
        }
        if buffer.readableBytes > limit { throw LineTooLong() }
        return .needMoreData
    }
}

private final class ControlHandler: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let handle: @Sendable (ControlRequest) -> ControlResponse
    private let logger: Logger
    private static let work = DispatchQueue(label: "syncd.control", attributes: .concurrent)

    init(handle: @escaping @Sendable (ControlRequest) -> ControlResponse, logger: Logger) {
        self.handle = handle
        self.logger = logger
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let line = unwrapInboundIn(data)
        let channel = context.channel
        let handle = self.handle
        let request: ControlRequest
        do {
            request = try JSONDecoder().decode(ControlRequest.self, from: Data(line.readableBytesView))
        } catch {
            reply(channel, .failure("malformed request: \(error)"))
            return
        }
        Self.work.async { [self] in
            reply(channel, handle(request))
        }
    }

    private func reply(_ channel: Channel, _ response: ControlResponse) {
        var data = (try? JSONEncoder().encode(response)) ?? Data(#"{"ok":false,"error":"encoding failed"}"#.utf8)
        data.append(UInt8(ascii: "\n"))
        channel.writeAndFlush(ByteBuffer(bytes: data), promise: nil)
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        logger.debug("control connection closed: \(error)")
        context.close(promise: nil)
    }
}
