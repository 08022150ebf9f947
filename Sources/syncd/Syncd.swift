import ArgumentParser
import Foundation
import SyncDaemon

@main
struct Syncd: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "syncd",
        abstract: "Peer-to-peer folder synchronization: one secret, every node the same folder.",
        version: SyncdVersion.string,
        subcommands: [DaemonCommand.self, AddCommand.self, RemoveCommand.self, AcceptDeletionsCommand.self, StatusCommand.self, PeersCommand.self, WaitCommand.self,
                      SecretCommand.self, IDCommand.self, BenchCommand.self])
}

/// `--home` for every subcommand; falls back to $SYNCD_HOME, then the documented default.
struct HomeOption: ParsableArguments {
    @Option(name: .long, help: "Daemon home directory (default: $SYNCD_HOME, /var/lib/syncd for root, else ~/.local/state/syncd).")
    var home: String?

    var resolved: Home { Home.resolve(explicit: home) }
}

/// Sends a request and turns a daemon-side failure into a clean exit with the daemon's message.
func call(_ request: ControlRequest, home: Home, timeout: TimeInterval = 60) throws -> ControlResponse {
    let response: ControlResponse
    do {
        response = try ControlClient.send(request, home: home, timeout: timeout)
    } catch {
        throw CLIError("\(error)")
    }
    guard response.ok else { throw CLIError(response.error ?? "the daemon refused the request") }
    return response
}

struct CLIError: Error, CustomStringConvertible {
    let description: String
    init(_ message: String) { description = message }
}

/// Makes a user-typed path absolute against the current directory.
func absolutePath(_ path: String) -> String {
    path.hasPrefix("/") ? path : FileManager.default.currentDirectoryPath + "/" + path
}
