import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.time.Duration;

/**
 * Java's HttpClient with nothing configured in code: the proxy and the
 * truststore come from the system properties JAVA_TOOL_OPTIONS sets, as in an
 * injected pod (HttpClient uses the default proxy selector and SSL context).
 *
 *   java HttpClientCheck.java URL...
 *
 * Prints "STATUS BODY-BYTES" per URL, or "ERROR ...".
 */
public class HttpClientCheck {
    public static void main(String[] urls) {
        HttpClient client = HttpClient.newHttpClient();
        boolean failed = false;
        for (String url : urls) {
            try {
                HttpRequest request = HttpRequest.newBuilder(URI.create(url))
                        .timeout(Duration.ofSeconds(20))
                        .build();
                HttpResponse<byte[]> response =
                        client.send(request, HttpResponse.BodyHandlers.ofByteArray());
                System.out.println(response.statusCode() + " " + response.body().length);
            } catch (Exception error) {
                System.out.println("ERROR " + error);
                failed = true;
            }
        }
        System.exit(failed ? 1 : 0);
    }
}
