import ArgumentParser
import SyncDaemon

struct AcceptDeletionsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "accept-deletions",
        abstract: "Delete on every peer the files missing from a folder whose contents are unknown.",
        discussion: """
            A folder whose marker was missing, whose scan found most of its files gone at once, or \
            whose index was rebuilt never announces missing files as deleted: it pulls them back \
            from peers. This command says the files are gone on purpose: they are recorded as \
            deleted (peers move them to their trash), and for the next 10 minutes further \
            deletions in the folder count as confirmed too, however many.
            """)

    @OptionGroup var home: HomeOption

    @Argument(help: "The shared folder.")
    var path: String

    func run() throws {
        let response = try call(ControlRequest(command: .acceptDeletions, path: absolutePath(path)), home: home.resolved)
        print("Recorded \(response.deletions ?? 0) missing paths of \(absolutePath(path)) as deleted; peers move them to their trash.")
    }
}
