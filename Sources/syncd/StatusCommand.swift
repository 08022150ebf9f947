import ArgumentParser
import Foundation
import SyncDaemon

struct StatusCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status", abstract: "Show the daemon's folders, their peers, progress and errors.",
        discussion: """
            Exits 0 when every folder runs, 2 when a folder is in error (paused; the output says why), \
            1 when the daemon cannot be asked. A folder's state is idle (no peer connected), syncing \
            (something pending or a connected peer not caught up), in sync (what `syncd wait` requires \
            holds), scanning, error or unknown.
            """)

    @OptionGroup var home: HomeOption

    @Argument(help: "Only this folder.")
    var path: String?

    @Flag(help: "Machine-readable output.")
    var json = false

    /// The exit status when a folder is in error.
    static let folderInError: Int32 = 2

    func run() throws {
        let response = try call(ControlRequest(command: .status, path: path.map(absolutePath)), home: home.resolved)
        guard let status = response.status else { throw CLIError("the daemon sent no status") }
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
            print(String(decoding: try encoder.encode(status), as: UTF8.self))
        } else {
            print(StatusText.render(status, now: Date().timeIntervalSince1970), terminator: "")
        }
        if status.folders.contains(where: { $0.state == "error" }) { throw ExitCode(Self.folderInError) }
    }
}

/// The human form of `syncd status`: one block per folder — state, what it holds, the pending
/// set's progress, its peers (dead ones with when they were last seen), conflicts and errors.
/// Devices are named by the first group of their id, as the logs name them.
enum StatusText {
    static func render(_ status: StatusReport, now: Double) -> String {
        var out = "device \(status.device)  (syncd \(status.version))\n"
        if let http = status.http { out += "http \(http)\n" }
        if status.folders.isEmpty { out += "no folders; share one with `syncd add PATH --secret`\n" }
        for f in status.folders {
            out += "\(f.path)  [\(f.access)]  \(f.state)\(f.error.map { ": \($0)" } ?? "")\n"
            out += "  folder \(f.folderId)\n"
            out += "  \(f.localFiles) files, \(f.localDirectories) directories, \(bytes(f.localBytes)), sequence \(f.sequence)\(f.watching ? "" : ", not watching (periodic rescans)")\n"
            if let p = f.progress {
                var line = "  pulling: \(p.doneFiles) of \(p.totalFiles) files, \(bytes(p.doneBytes)) of \(bytes(p.totalBytes)) (\(String(format: "%.1f", p.percent)) %)"
                if let rate = p.bytesPerSecond { line += ", \(bytes(Int64(rate)))/s" }
                if let eta = p.etaSeconds { line += ", ETA \(duration(eta))" }
                out += line + "\n"
            }
            let peers = f.peers ?? []
            if peers.isEmpty && f.access != "storage" { out += "  peers: none known yet\n" }
            for p in peers { out += "  peer \(p.name ?? String(p.device.prefix(7)))  \(peer(p, now: now))\n" }
            if let c = f.conflicts, c > 0 { out += "  conflicts: \(c) since start (copies named *.sync-conflict-*)\n" }
            if let e = f.errors, e > 0 { out += "  errors: \(e) since start\n" }
            if let failing = f.pullError { out += "  not applied (retrying): \(failing)\n" }
        }
        return out
    }

    static func peer(_ p: StatusReport.Folder.Peer, now: Double) -> String {
        guard p.connected else {
            let gossip = p.gossip.map { $0 == "alive" ? "connecting" : "\($0) (gossip)" } ?? "not connected"
            let seen = p.lastSeen.map { "last seen \(duration(max(0, now - $0))) ago" } ?? "not seen since start"
            return "\(gossip), \(seen)"
        }
        var parts = ["connected"]
        if let rtt = p.rttMs { parts.append("rtt \(String(format: "%.1f", rtt)) ms") }
        let send = p.sendLag ?? 0, receive = p.receiveLag ?? 0
        if send == 0 && receive == 0 {
            parts.append(p.digest == "differ" ? "indexes differ (repairing)" : "caught up")
        } else {
            var lag: [String] = []
            if send > 0 { lag.append("lacks \(send) of our changes") }
            if receive > 0 { lag.append("\(receive) of its changes to apply here") }
            parts.append(lag.joined(separator: ", ") + (p.lagSeconds.map { " for \(duration($0))" } ?? ""))
        }
        return parts.joined(separator: ", ")
    }

    static func bytes(_ n: Int64) -> String { HumanUnits.bytes(n) }
    static func duration(_ s: Double) -> String { HumanUnits.duration(s) }
}
