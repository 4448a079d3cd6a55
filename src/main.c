/* main.c - placeholder until the mount code lands. */
int main(void)
{
    return 1;
}
